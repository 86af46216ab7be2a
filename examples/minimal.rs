//! A whole app on latchkey's core crates and SQLite: register, log in, a login-required page,
//! log out. `cargo run --example minimal`, then open http://127.0.0.1:8080.
use actix_web::{cookie::Key, web, App, HttpRequest, HttpResponse, HttpServer};
use diesel::{connection::SimpleConnection, prelude::*};
use latchkey_auth::csrf::{CsrfCookie, CsrfForm, CsrfToken, NoFields};
use latchkey_auth::password::{Hasher, Password};
use latchkey_auth::{identity_middleware, registry, Auth, AuthError, AuthUser, LoginPolicy, LoginRequired};
use latchkey_db::{DatabaseUrl, DbConnection};
use latchkey_sessions::{database, Backend, Lifecycle, Lifetimes, Store};

diesel::table! { users (id) { id -> Int4, email -> Text, password_hash -> Text, credential_epoch -> Int8 } }
const USERS: &str = "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL, credential_epoch BIGINT NOT NULL DEFAULT 0);";

#[derive(Queryable, Selectable)]
struct User {
    id: i32,
    email: String,
    password_hash: String,
    credential_epoch: i64,
}

impl AuthUser for User {
    fn id(&self) -> i32 {
        self.id
    }
    fn credential_epoch(&self) -> i64 {
        self.credential_epoch
    }
    fn load(conn: &mut DbConnection, id: i32) -> QueryResult<Option<Self>> {
        users::table.find(id).select(User::as_select()).first(conn).optional()
    }
    fn advance_credential_epoch(conn: &mut DbConnection, id: i32) -> QueryResult<i64> {
        diesel::update(users::table.find(id))
            .set(users::credential_epoch.eq(users::credential_epoch + 1))
            .execute(conn)?;
        users::table.find(id).select(users::credential_epoch).first(conn)
    }
}

#[derive(serde::Deserialize)]
struct Credentials {
    email: String,
    password: Password,
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", to)).finish()
}

async fn home(req: HttpRequest) -> Result<HttpResponse, AuthError> {
    let token = CsrfToken::for_request(&req)?.token; // base64url: safe to put in HTML as is
    let form = |action: &str| {
        format!(
            r#"<form method="post" action="{action}"><input type="hidden" name="csrf_token" value="{token}"><input name="email" placeholder="email"><input name="password" type="password"><button>{action}</button></form>"#
        )
    };
    let logout = format!(
        r#"<form method="post" action="/logout"><input type="hidden" name="csrf_token" value="{token}"><button>log out</button></form>"#
    );
    Ok(HttpResponse::Ok().content_type("text/html").body(format!(
        "{}{}<a href=\"/members\">members</a>{logout}",
        form("/register"),
        form("/login")
    )))
}

async fn find(auth: &Auth, email: String) -> Result<Option<User>, AuthError> {
    Ok(latchkey_db::run(auth.pool(), move |c| {
        users::table.filter(users::email.eq(email)).select(User::as_select()).first(c).optional()
    })
    .await?)
}

async fn register(
    req: HttpRequest,
    auth: web::Data<Auth>,
    CsrfForm(form): CsrfForm<Credentials>,
) -> Result<HttpResponse, AuthError> {
    let hash = auth.hasher().hash(form.password).await?;
    let email = form.email.clone();
    let inserted = latchkey_db::run(auth.pool(), move |c| {
        diesel::insert_into(users::table)
            .values((users::email.eq(email), users::password_hash.eq(hash)))
            .execute(c)
    })
    .await;
    let Some(user) = find(&auth, form.email).await?.filter(|_| inserted.is_ok()) else {
        return Ok(HttpResponse::Conflict().body("taken"));
    };
    latchkey_auth::log_in(&req, &user, false).await?;
    Ok(redirect("/members"))
}

async fn login(
    req: HttpRequest,
    auth: web::Data<Auth>,
    CsrfForm(form): CsrfForm<Credentials>,
) -> Result<HttpResponse, AuthError> {
    let user = find(&auth, form.email).await?; // read before the check: see `log_in`
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    match user.filter(|_| true) {
        Some(user) if auth.hasher().verify(form.password, stored).await? => {
            latchkey_auth::log_in(&req, &user, false).await?
        }
        _ => return Ok(HttpResponse::Unauthorized().body("wrong email or password")),
    }
    Ok(redirect("/members"))
}

async fn members(user: LoginRequired<User>) -> HttpResponse {
    HttpResponse::Ok().body(format!("Hello, {}", user.email))
}

async fn logout(req: HttpRequest, _: CsrfForm<NoFields>) -> Result<HttpResponse, AuthError> {
    latchkey_auth::log_out::<User>(&req).await?;
    Ok(redirect("/"))
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let pool = latchkey_db::pool(
        &DatabaseUrl::parse(&env("DATABASE_URL", "sqlite://minimal.sqlite3"))?,
        4,
        std::time::Duration::from_secs(5),
    )?;
    pool.get()?
        .batch_execute(&[USERS, registry::schema::SQLITE_DDL, database::schema::SQLITE_DDL].concat())?;
    let hasher = Hasher::new(env("BCRYPT_COST", "12").parse()?).await?;
    let key = Key::derive_from(env("SECRET_KEY", &"change me ".repeat(7)).as_bytes()); // 64+ bytes
    let auth = web::Data::new(Auth::new(pool.clone(), LoginPolicy::default(), hasher, key.signing(), false));
    let (lifetimes, store) = (
        Lifetimes::default(),
        Store::new(
            Backend::Database(database::DatabaseStore::new(pool, Lifetimes::default().rotate_grace)),
            Lifetimes::default(),
        ),
    );
    let server = HttpServer::new(move || {
        App::new()
            .app_data(auth.clone())
            .wrap(identity_middleware())
            .wrap(Lifecycle::new(&lifetimes, true))
            .wrap(store.middleware(key.clone(), false))
            .wrap(CsrfCookie)
            .route("/", web::get().to(home))
            .route("/login", web::get().to(home))
            .route("/members", web::get().to(members))
            .route("/register", web::post().to(register))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
    })
    .bind(env("BIND", "127.0.0.1:8080"))?;
    println!("listening on http://{}", server.addrs()[0]);
    Ok(server.run().await?)
}
