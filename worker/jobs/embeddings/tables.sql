-- Tables of the embeddings job: the job postings (EMBEDDING_JOBS_TABLE) and the embedding queue
-- (EMBEDDING_QUEUE_TABLE), as the application has them.
-- `embedding` is pgvector's vector(384) where the vector type is visible (CREATE EXTENSION vector
-- beforehand), and real[] where it is not: the job works with either. 384 is all-MiniLM-L6-v2's
-- size; for another model use its size, and set EMBEDDING_DIMENSIONS to match.
CREATE TABLE jobs (
  id          integer PRIMARY KEY,
  job_hash    text NOT NULL UNIQUE,
  title       text NOT NULL,
  company     text NOT NULL,
  description text,
  is_active   boolean NOT NULL DEFAULT true,
  status      text NOT NULL DEFAULT 'active',
  embedding   real[],            -- vector(384) below, with pgvector
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE embedding_queue (
  job_id     integer PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
  status     text NOT NULL CHECK (status IN ('pending','processing','completed','failed')),
  retry_count integer NOT NULL DEFAULT 0,
  error_message text,
  updated_at timestamptz NOT NULL DEFAULT now()
);
DO $$
BEGIN
  IF to_regtype('vector') IS NOT NULL THEN
    ALTER TABLE jobs ALTER COLUMN embedding TYPE vector(384) USING embedding::vector(384);
  END IF;
END $$;
