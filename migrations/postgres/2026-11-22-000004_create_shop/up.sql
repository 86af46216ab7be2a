-- The demo shop: a small fixed catalogue, and the carts of logged-in users. Guests' carts live
-- in their session and join the user's cart here at login (src/shop/).
CREATE TABLE products (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    -- Euro cents, so prices add up exactly.
    price_cents INTEGER NOT NULL
);

-- One row per product in a user's cart. The application caps quantity (shop::MAX_QUANTITY).
CREATE TABLE cart_items (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    product_id INTEGER NOT NULL REFERENCES products (id),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (user_id, product_id)
);

INSERT INTO products (name, description, price_cents) VALUES
    ('Brass padlock', 'A solid 40 mm padlock with two keys.', 1250),
    ('Key ring', 'Stainless steel, holds a dozen keys without complaint.', 350),
    ('Key blank', 'Cut to match the key you already have.', 490),
    ('Door chain', 'Lets you see who is there before you open the door.', 1899),
    ('Key cabinet', 'A lockable wall cabinet with 20 labelled hooks.', 4500),
    ('Spare key safe', 'A combination lock box for the key under the doormat.', 2999);
