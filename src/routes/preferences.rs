//! Display preferences: anyone, guest or user, picks a theme and an accent colour, kept in a
//! signed cookie of this browser (see `web::preferences`).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use actix_web_flash_messages::FlashMessage;
use serde::{Deserialize, Serialize};
use tera::Context;

use crate::error::AppError;
use crate::http;
use crate::pages::preferences::{Accent, Preferences, Theme};
use crate::pages::see_other;
use crate::pages::Page;
use crate::state::AppState;
use latchkey_auth::csrf::CsrfForm;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/preferences", http::get().to(preferences_form))
        .route("/preferences", web::post().to(save_preferences));
}

#[derive(Deserialize)]
struct PreferencesForm {
    #[serde(default)]
    theme: String,
    #[serde(default)]
    accent: String,
}

type FieldErrors = BTreeMap<&'static str, &'static str>;

impl PreferencesForm {
    /// The chosen preferences, or an error per field that names no known option. The form
    /// only offers known options, so an unknown one is a stale or hand-made request.
    fn parse(&self) -> Result<Preferences, FieldErrors> {
        let theme = Theme::from_name(&self.theme);
        let accent = Accent::from_name(&self.accent);
        match (theme, accent) {
            (Some(theme), Some(accent)) => Ok(Preferences { theme, accent }),
            _ => {
                let mut errors = FieldErrors::new();
                if theme.is_none() {
                    errors.insert("theme", "Choose light or dark.");
                }
                if accent.is_none() {
                    errors.insert("accent", "Choose one of the accent colours listed.");
                }
                Err(errors)
            }
        }
    }
}

/// One radio button; `value` is always one of the enums' fixed names.
#[derive(Serialize)]
struct Choice {
    value: &'static str,
    label: &'static str,
    checked: bool,
}

/// The form showing `selected` as checked.
fn preferences_context(selected: Preferences, errors: &FieldErrors) -> Context {
    let themes: Vec<Choice> = Theme::ALL
        .into_iter()
        .map(|t| Choice { value: t.name(), label: t.label(), checked: t == selected.theme })
        .collect();
    let accents: Vec<Choice> = Accent::ALL
        .into_iter()
        .map(|a| Choice { value: a.name(), label: a.label(), checked: a == selected.accent })
        .collect();
    let mut context = Context::new();
    context.insert("themes", &themes);
    context.insert("accents", &accents);
    context.insert("errors", errors);
    context
}

async fn preferences_form(page: Page, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let current = current(&page, &state);
    page.render("preferences.html", preferences_context(current, &FieldErrors::new()))
}

async fn save_preferences(
    CsrfForm(form): CsrfForm<PreferencesForm>,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let preferences = match form.parse() {
        Ok(preferences) => preferences,
        Err(errors) => {
            // Keep the valid half of the submission checked; the cookie stays as it was.
            let current = current(&page, &state);
            let shown = Preferences {
                theme: Theme::from_name(&form.theme).unwrap_or(current.theme),
                accent: Accent::from_name(&form.accent).unwrap_or(current.accent),
            };
            return page.render_with_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "preferences.html",
                preferences_context(shown, &errors),
            );
        }
    };
    let cookie = preferences.to_cookie(&state.keys.preferences, state.is_production());
    FlashMessage::success("Your preferences have been saved.").send();
    let mut response = see_other("/preferences");
    response.add_cookie(&cookie).map_err(AppError::internal)?;
    Ok(response)
}

fn current(page: &Page, state: &AppState) -> Preferences {
    Preferences::from_request(page.request(), &state.keys.preferences, state.is_production())
}
