-- Table of the inventory_fields job: the products (PRODUCTS_TABLE), as the application has them.
-- The job reads and writes id, created_at and deleted_at only (name is the demo's):
--   id          its key: bigint here; any integer type, uuid or text do as well;
--   created_at  a timestamp (timestamptz or timestamp); NULL becomes 0 in the index;
--   deleted_at  an integer type: 0 = active, else the deletion's unix seconds; NULL is what the job
--               sets to 0.
CREATE TABLE products (
  id         bigint PRIMARY KEY,
  name       text,
  created_at timestamptz,
  deleted_at bigint
);
