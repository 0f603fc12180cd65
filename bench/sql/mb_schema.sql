-- The same app table, attached to msgbilling (which adds the billing
-- columns and its own indexes).
CREATE EXTENSION msgbilling;
\ir app_table.sql
SET client_min_messages = warning;
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at', bill_existing => true);
