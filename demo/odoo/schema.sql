-- The finance and sales tables of an Odoo 17 database, with Odoo's own column names and types
-- (monetary and float fields are unconstrained numeric, translatable names are jsonb, write_date
-- is a UTC timestamp without a zone, stamped by the ORM at each write). Only the columns the
-- Control Room template reads and a few more; enough to ingest without an Odoo server.
CREATE TABLE res_partner (
    id serial PRIMARY KEY,
    name varchar NOT NULL,
    email varchar,
    phone varchar,
    is_company boolean DEFAULT false,
    customer_rank integer DEFAULT 0,
    supplier_rank integer DEFAULT 0,
    country_code varchar(2),
    active boolean DEFAULT true,
    create_uid integer,
    write_uid integer,
    create_date timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    write_date timestamp DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE TABLE product_template (
    id serial PRIMARY KEY,
    name jsonb NOT NULL,
    type varchar NOT NULL DEFAULT 'consu',
    list_price numeric,
    active boolean DEFAULT true,
    create_date timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    write_date timestamp DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE TABLE product_product (
    id serial PRIMARY KEY,
    product_tmpl_id integer NOT NULL REFERENCES product_template (id),
    default_code varchar,
    barcode varchar,
    active boolean DEFAULT true,
    create_date timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    write_date timestamp DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE TABLE account_account (
    id serial PRIMARY KEY,
    code varchar(64) NOT NULL,
    name jsonb NOT NULL,
    account_type varchar NOT NULL,
    reconcile boolean DEFAULT false,
    create_date timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    write_date timestamp DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE TABLE sale_order (
    id serial PRIMARY KEY,
    name varchar NOT NULL,
    partner_id integer NOT NULL,
    date_order timestamp NOT NULL,
    state varchar,
    amount_untaxed numeric,
    amount_tax numeric,
    amount_total numeric,
    currency_id integer,
    company_id integer,
    create_date timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    write_date timestamp DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE TABLE sale_order_line (
    id serial PRIMARY KEY,
    order_id integer NOT NULL,
    product_id integer,
    name text NOT NULL,
    product_uom_qty numeric NOT NULL,
    price_unit numeric NOT NULL,
    price_subtotal numeric,
    price_total numeric,
    create_date timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    write_date timestamp DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE TABLE account_move (
    id serial PRIMARY KEY,
    name varchar,
    move_type varchar NOT NULL,
    state varchar NOT NULL,
    partner_id integer,
    invoice_origin varchar,
    invoice_date date,
    invoice_date_due date,
    amount_untaxed_signed numeric,
    amount_total_signed numeric,
    amount_residual numeric,
    amount_residual_signed numeric,
    payment_state varchar,
    currency_id integer,
    create_date timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    write_date timestamp DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE TABLE account_move_line (
    id serial PRIMARY KEY,
    move_id integer NOT NULL,
    account_id integer,
    partner_id integer,
    product_id integer,
    name varchar,
    date date,
    debit numeric,
    credit numeric,
    balance numeric,
    amount_residual numeric,
    reconciled boolean,
    display_type varchar,
    create_date timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    write_date timestamp DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX res_partner_write ON res_partner (write_date, id);
CREATE INDEX product_product_write ON product_product (write_date, id);
CREATE INDEX sale_order_write ON sale_order (write_date, id);
CREATE INDEX sale_order_line_write ON sale_order_line (write_date, id);
CREATE INDEX account_move_write ON account_move (write_date, id);
CREATE INDEX account_move_line_write ON account_move_line (write_date, id);
