//! A whole app on latchkey's core crates and SQLite: register, log in, a login-required page,
//! log out. `cargo run --example minimal`, then open http://127.0.0.1:8080.
use actix_web::{cookie::Key, middleware::from_fn, web, App, HttpRequest, HttpResponse, HttpServer};
use diesel::{connection::SimpleConnection, prelude::*};
use latchkey_auth::csrf::{self, CsrfForm, CsrfToken, NoFields};
use latchkey_auth::{
    audit, identity_middleware, password, registry, Auth, AuthError, AuthUser, LoginRequired,
};
use latchkey_db::{DatabaseUrl, DbConnection};
use latchkey_sessions::{database, Backend, Lifecycle, Lifetimes, Store};

diesel::table! { users { id -> Int4, email -> Text, password_hash -> Text, credential_epoch -> Int8 } }
const USERS: &str = "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL, credential_epoch BIGINT NOT NULL DEFAULT 0);";

#[derive(Clone, Queryable)]
struct User(i32, String, String, i64); // id, email, password hash, credential epoch

#[rustfmt::skip] // kept short: the example is meant to be read at a glance
impl AuthUser for User {
    fn id(&self) -> i32 { self.0 }
    fn credential_epoch(&self) -> i64 { self.3 }
    fn load(conn: &mut DbConnection, id: i32) -> QueryResult<Option<Self>> { users::table.find(id).first(conn).optional() }
    fn advance_credential_epoch(conn: &mut DbConnection, id: i32) -> QueryResult<i64> {
        diesel::update(users::table.find(id)).set(users::credential_epoch.eq(users::credential_epoch + 1)).execute(conn)?;
        users::table.find(id).select(users::credential_epoch).first(conn)
    }
}

#[derive(serde::Deserialize)]
struct Credentials {
    email: String,
    password: password::Password,
}

async fn home(req: HttpRequest) -> Result<HttpResponse, AuthError> {
    let token = CsrfToken::for_request(&req)?.token; // base64url: safe in HTML as it is
    let form = |to: &str, fields: &str| {
        format!(
            r#"<form method="post" action="{to}"><input type="hidden" name="csrf_token" value="{token}">{fields}<button>{to}</button></form>"#
        )
    };
    let fields = r#"<input name="email"><input name="password" type="password">"#;
    let page = [form("/register", fields), form("/login", fields), form("/logout", "")].concat();
    Ok(HttpResponse::Ok().content_type("text/html").body(page + r#"<a href="/members">members</a>"#))
}

/// Registers (at `/register`) and logs in. The user is read before the password is checked:
/// the login then holds only for the credentials of that moment (see `log_in`).
async fn enter(
    req: HttpRequest,
    auth: web::Data<Auth>,
    form: CsrfForm<Credentials>,
) -> Result<HttpResponse, AuthError> {
    let CsrfForm(Credentials { email, password }) = form;
    if req.path() == "/register" {
        let (hash, email) = (auth.hasher().hash(password.clone()).await?, email.clone());
        let new = (users::email.eq(email), users::password_hash.eq(hash));
        let _taken =
            latchkey_db::run(auth.pool(), |c| diesel::insert_into(users::table).values(new).execute(c)).await;
    }
    let query = users::table.filter(users::email.eq(email));
    let user = latchkey_db::run(auth.pool(), move |c| query.first::<User>(c).optional()).await?;
    let matched = auth.hasher().verify(password, user.as_ref().map(|u| u.2.clone())).await?;
    let Some(user) = user.filter(|_| matched) else { return Ok(HttpResponse::Unauthorized().body("no")) };
    latchkey_auth::log_in(&req, &user, false).await?;
    Ok(HttpResponse::SeeOther().insert_header(("Location", "/members")).finish())
}

async fn members(user: LoginRequired<User>) -> String {
    format!("Hello, {}", user.1)
}

async fn logout(req: HttpRequest, _: CsrfForm<NoFields>) -> Result<HttpResponse, AuthError> {
    latchkey_auth::log_out::<User>(&req).await?;
    Ok(HttpResponse::SeeOther().insert_header(("Location", "/")).finish())
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let url = DatabaseUrl::parse(&env("DATABASE_URL", "sqlite://minimal.sqlite3"))?;
    let pool = latchkey_db::pool(&url, 4, std::time::Duration::from_secs(5))?;
    pool.get()?.batch_execute(
        &[USERS, registry::schema::SQLITE_DDL, audit::schema::SQLITE_DDL, database::schema::SQLITE_DDL]
            .concat(),
    )?;
    let hasher = password::Hasher::new(env("BCRYPT_COST", "12").parse()?).await?;
    let secret = env("SECRET_KEY", &"change me ".repeat(7)); // 64 bytes or more
    let (key, csrf) =
        (Key::derive_from(secret.as_bytes()), Key::derive_from(format!("csrf {secret}").as_bytes()));
    let auth = web::Data::new(Auth::new(pool.clone(), Default::default(), hasher, csrf.signing(), false));
    let lifetimes = Lifetimes::default();
    let store = Store::new(
        Backend::Database(database::DatabaseStore::new(pool, lifetimes.rotate_grace)),
        lifetimes.clone(),
    );
    #[rustfmt::skip]
    let server = HttpServer::new(move || {
        App::new().app_data(auth.clone())
            .wrap(identity_middleware()).wrap(Lifecycle::new(&lifetimes, true))
            .wrap(store.middleware(key.clone(), false)).wrap(from_fn(csrf::send_cookie))
            .route("/", web::get().to(home)).route("/login", web::get().to(home)).route("/members", web::get().to(members))
            .route("/register", web::post().to(enter)).route("/login", web::post().to(enter)).route("/logout", web::post().to(logout))
    })
    .bind(env("BIND", "127.0.0.1:8080"))?;
    println!("listening on http://{}", server.addrs()[0]);
    Ok(server.run().await?)
}
