// @generated automatically by Diesel CLI.

diesel::table! {
    alerts (id) {
        id -> Int8,
        at -> Timestamp,
        rule -> Text,
        subject -> Text,
        detail -> Text,
        user_id -> Nullable<Int4>,
        ip -> Nullable<Text>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Int8,
        at -> Timestamp,
        event -> Text,
        outcome -> Text,
        user_id -> Nullable<Int4>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        request_id -> Nullable<Text>,
        detail -> Nullable<Text>,
    }
}

diesel::table! {
    cart_items (user_id, product_id) {
        user_id -> Int4,
        product_id -> Int4,
        quantity -> Int4,
    }
}

diesel::table! {
    email_confirmations (token_hash) {
        token_hash -> Text,
        user_id -> Int4,
        email -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    logins (id) {
        id -> Text,
        user_id -> Int4,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        remember -> Bool,
        fresh -> Bool,
        credential_epoch -> Int8,
        generation -> Int8,
        rotated_at -> Timestamp,
        proved_at -> Timestamp,
        second_factor -> Bool,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        created_at -> Timestamp,
        recipient -> Text,
        subject -> Text,
        body -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamp,
        claimed_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    passkey_ceremonies (id) {
        id -> Text,
        purpose -> Text,
        user_id -> Nullable<Int4>,
        state -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    passkeys (id) {
        id -> Int4,
        user_id -> Int4,
        user_handle -> Text,
        credential_id -> Text,
        name -> Text,
        passkey -> Text,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    password_resets (token_hash) {
        token_hash -> Text,
        user_id -> Int4,
        credential_epoch -> Int8,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    pending_logins (id) {
        id -> Text,
        user_id -> Int4,
        created_at -> Timestamp,
        attempts -> Int4,
        remember -> Bool,
        next -> Text,
        credential_epoch -> Int8,
    }
}

diesel::table! {
    products (id) {
        id -> Int4,
        name -> Text,
        description -> Text,
        price_cents -> Int4,
    }
}

diesel::table! {
    recovery_codes (id) {
        id -> Int4,
        user_id -> Int4,
        code_hash -> Text,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    session_states (id) {
        id -> Text,
        state -> Text,
        expires_at -> Timestamp,
        retired -> Bool,
    }
}

diesel::table! {
    throttle_counters (key) {
        key -> Text,
        count -> Int8,
        started_at -> Timestamp,
        last_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    totp_factors (user_id) {
        user_id -> Int4,
        secret -> Text,
        confirmed -> Bool,
        last_step -> Int8,
        created_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Int4,
        email -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        credential_epoch -> Int8,
        is_admin -> Bool,
        disabled_at -> Nullable<Timestamp>,
        email_confirmed_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(cart_items -> products (product_id));
diesel::joinable!(cart_items -> users (user_id));
diesel::joinable!(email_confirmations -> users (user_id));
diesel::joinable!(logins -> users (user_id));
diesel::joinable!(passkey_ceremonies -> users (user_id));
diesel::joinable!(passkeys -> users (user_id));
diesel::joinable!(password_resets -> users (user_id));
diesel::joinable!(pending_logins -> users (user_id));
diesel::joinable!(recovery_codes -> users (user_id));
diesel::joinable!(totp_factors -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    alerts,
    audit_events,
    cart_items,
    email_confirmations,
    logins,
    outbox,
    passkey_ceremonies,
    passkeys,
    password_resets,
    pending_logins,
    products,
    recovery_codes,
    session_states,
    throttle_counters,
    totp_factors,
    users,
);
