//! Display preferences (theme and accent colour) for guests and users alike, kept only in a
//! signed cookie of their own — never in the session or the database.
//!
//! The cookie holds `<theme>.<accent>` (e.g. `dark.green`), signed with a key used for nothing
//! else, so a value signed for another cookie cannot be replayed here. Reading never fails: a
//! missing, unsigned or tampered cookie gives the defaults, and an unknown name (say, an accent
//! a later version dropped) falls back to that field's default. Templates only ever see the
//! enums' fixed names, so nothing a visitor sends reaches the HTML or CSS.

use actix_web::cookie::{time::Duration, Cookie, CookieJar, Key, SameSite};
use actix_web::HttpRequest;
use serde::Serialize;

/// How long a browser keeps the preferences: they outlive browser restarts.
pub const COOKIE_MAX_AGE: Duration = Duration::days(365);

/// The preferences cookie's name: `__Host-` prefixed in production so no subdomain can plant one.
pub fn cookie_name(production: bool) -> &'static str {
    if production {
        "__Host-latchkey_prefs"
    } else {
        "latchkey_prefs"
    }
}

/// Light or dark colours for the whole site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    #[default]
    Light,
    Dark,
}

impl Theme {
    pub const ALL: [Self; 2] = [Self::Light, Self::Dark];

    /// The name used in forms, the cookie and `data-theme`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Light => "light",
            Self::Dark => "dark",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Light => "Light",
            Self::Dark => "Dark",
        }
    }

    /// The theme called `name` exactly, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|theme| theme.name() == name)
    }
}

/// The colour of links, buttons and focus details; each name has a rule in `static/style.css`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accent {
    #[default]
    Blue,
    Green,
    Purple,
    Orange,
    Red,
}

impl Accent {
    pub const ALL: [Self; 5] = [Self::Blue, Self::Green, Self::Purple, Self::Orange, Self::Red];

    /// The name used in forms, the cookie and `data-accent`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blue => "blue",
            Self::Green => "green",
            Self::Purple => "purple",
            Self::Orange => "orange",
            Self::Red => "red",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Blue => "Blue",
            Self::Green => "Green",
            Self::Purple => "Purple",
            Self::Orange => "Orange",
            Self::Red => "Red",
        }
    }

    /// The accent called `name` exactly, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|accent| accent.name() == name)
    }
}

/// What the base layout applies; serialised for templates as `{ theme, accent }` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Preferences {
    pub theme: Theme,
    pub accent: Accent,
}

impl Preferences {
    /// This request's preferences: the defaults unless it carries a cookie signed by us.
    pub fn from_request(req: &HttpRequest, key: &Key, production: bool) -> Self {
        req.cookie(cookie_name(production))
            .and_then(|cookie| CookieJar::new().signed(key).verify(cookie))
            .map(|cookie| Self::from_cookie_value(cookie.value()))
            .unwrap_or_default()
    }

    /// Reads a verified cookie value; anything unrecognised falls back to the defaults.
    pub fn from_cookie_value(value: &str) -> Self {
        let (theme, accent) = value.split_once('.').unwrap_or((value, ""));
        Self {
            theme: Theme::from_name(theme).unwrap_or_default(),
            accent: Accent::from_name(accent).unwrap_or_default(),
        }
    }

    pub fn cookie_value(self) -> String {
        format!("{}.{}", self.theme.name(), self.accent.name())
    }

    /// The signed cookie that stores these preferences for a year.
    pub fn to_cookie(self, key: &Key, production: bool) -> Cookie<'static> {
        let name = cookie_name(production);
        let mut jar = CookieJar::new();
        jar.signed_mut(key).add(self.to_cookie_unsealed(production));
        jar.get(name).cloned().unwrap_or_else(|| unreachable!("the jar holds the cookie just added"))
    }

    /// The cookie with its attributes, its value not yet signed.
    pub fn to_cookie_unsealed(self, production: bool) -> Cookie<'static> {
        Cookie::build(cookie_name(production), self.cookie_value())
            .path("/")
            .http_only(true)
            .secure(production)
            .same_site(SameSite::Lax)
            .max_age(COOKIE_MAX_AGE)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail by panicking")]

    use actix_web::test::TestRequest;

    use super::*;

    fn read(cookie: Cookie<'static>, key: &Key) -> Preferences {
        Preferences::from_request(&TestRequest::default().cookie(cookie).to_http_request(), key, false)
    }

    #[test]
    fn names_parse_exactly() {
        for theme in Theme::ALL {
            assert_eq!(Theme::from_name(theme.name()), Some(theme));
        }
        for accent in Accent::ALL {
            assert_eq!(Accent::from_name(accent.name()), Some(accent));
        }
        for name in ["", "Dark", "DARK", " dark", "dark ", "blue", "<script>"] {
            assert_eq!(Theme::from_name(name), None, "{name:?}");
        }
        for name in ["", "Green", "teal", "green;", "#00ff00", "dark"] {
            assert_eq!(Accent::from_name(name), None, "{name:?}");
        }
    }

    #[test]
    fn the_defaults_are_light_and_blue() {
        assert_eq!(Preferences::default(), Preferences { theme: Theme::Light, accent: Accent::Blue });
    }

    #[test]
    fn cookie_values_round_trip_and_unknown_parts_fall_back_to_defaults() {
        for theme in Theme::ALL {
            for accent in Accent::ALL {
                let preferences = Preferences { theme, accent };
                assert_eq!(Preferences::from_cookie_value(&preferences.cookie_value()), preferences);
            }
        }
        let dark_blue = Preferences { theme: Theme::Dark, accent: Accent::Blue };
        let light_red = Preferences { theme: Theme::Light, accent: Accent::Red };
        assert_eq!(Preferences::from_cookie_value("dark.teal"), dark_blue);
        assert_eq!(Preferences::from_cookie_value("dark"), dark_blue);
        assert_eq!(Preferences::from_cookie_value("sepia.red"), light_red);
        assert_eq!(Preferences::from_cookie_value("dark.green.extra"), dark_blue);
        for junk in ["", ".", "..", "red.dark", "\u{0}", "<b>.</b>"] {
            assert_eq!(Preferences::from_cookie_value(junk), Preferences::default(), "{junk:?}");
        }
    }

    #[test]
    fn the_cookie_is_signed_persistent_and_locked_down() {
        let key = Key::generate();
        let preferences = Preferences { theme: Theme::Dark, accent: Accent::Green };
        let cookie = preferences.to_cookie(&key, false);
        assert_eq!(cookie.name(), "latchkey_prefs");
        assert_ne!(cookie.value(), "dark.green", "the value carries a signature");
        assert!(cookie.value().ends_with("dark.green"));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Lax));
        assert_eq!(cookie.max_age(), Some(Duration::days(365)));
        assert_eq!(cookie.secure(), Some(false));
        assert_eq!(read(cookie, &key), preferences);

        let production = preferences.to_cookie(&key, true);
        assert_eq!(production.name(), "__Host-latchkey_prefs");
        assert_eq!(production.secure(), Some(true));
        assert_eq!(production.path(), Some("/"));
        assert_eq!(production.domain(), None);
    }

    #[test]
    fn unsigned_tampered_or_foreign_cookies_are_ignored() {
        let key = Key::generate();
        let signed = Preferences { theme: Theme::Dark, accent: Accent::Green }.to_cookie(&key, false);
        let tampered = signed.value().replace("green", "red");
        for value in ["dark.green".to_owned(), tampered, format!("x{}", signed.value()), String::new()] {
            assert_eq!(
                read(Cookie::new("latchkey_prefs", value.clone()), &key),
                Preferences::default(),
                "{value:?}"
            );
        }
        assert_eq!(read(signed.clone(), &Key::generate()), Preferences::default(), "signed with another key");
        let production_request = TestRequest::default().cookie(signed).to_http_request();
        assert_eq!(
            Preferences::from_request(&production_request, &key, true),
            Preferences::default(),
            "production reads only the __Host- cookie"
        );
    }

    #[test]
    fn templates_see_the_names() {
        let json = serde_json::to_value(Preferences { theme: Theme::Dark, accent: Accent::Purple }).unwrap();
        assert_eq!(json, serde_json::json!({ "theme": "dark", "accent": "purple" }));
    }
}
