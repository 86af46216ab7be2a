//! The password policy (NIST SP 800-63B, ASVS V6): beside the length rules, common and
//! guessable passwords, and passwords holding the email's local part, are refused with a
//! message that says why, at registration and at a password change, and change nothing.

use diesel::{QueryDsl, RunQueryDsl};
use reqwest::StatusCode;

use crate::matrix;
use crate::support::{location, text_in, TestApp, PASSWORD};

/// (password, what the message must say) for an account `johanna@example.com`.
const REFUSED: &[(&str, &str)] = &[
    ("password1234", "too easy to guess"),
    ("123456789012", "too easy to guess"),
    ("latchkey2025", "too easy to guess"),
    ("x-JOHANNA-4-ever-and-ever", "Do not use your email address"),
];

fn users(app: &TestApp) -> i64 {
    use latchkey::db::schema::users;
    users::table.count().get_result(&mut app.connection()).unwrap()
}

async fn common_and_personal_passwords_are_refused_with_a_reason(app: TestApp) {
    let email = "johanna@example.com";
    for (password, why) in REFUSED {
        let answer = app.register(email, password).await;
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY, "{password}");
        let page = answer.text().await.unwrap();
        let message =
            text_in(&page, "#password-errors").unwrap_or_else(|| panic!("a message for {password}: {page}"));
        assert!(message.contains(why), "{password}: {message}");
        assert_eq!(users(&app), 0, "nothing is created");
    }

    // The same rules at a password change.
    assert_eq!(location(&app.register(email, PASSWORD).await), "/");
    for (password, why) in REFUSED {
        let fields = [
            ("current_password", PASSWORD),
            ("new_password", *password),
            ("new_password_confirm", *password),
        ];
        let answer = app.submit("/account/password", "/account/password", &fields).await;
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY, "{password}");
        let page = answer.text().await.unwrap();
        let message = text_in(&page, "#new_password-errors").unwrap_or_else(|| panic!("a message: {page}"));
        assert!(message.contains(why), "{password}: {message}");
    }
    app.logout().await;
    assert_eq!(location(&app.login(email, PASSWORD).await), "/", "the password did not change");
}

matrix!(common_and_personal_passwords_are_refused_with_a_reason);
