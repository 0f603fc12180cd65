-- W7: attach in one transaction (scans the table, builds the indexes).
SET client_min_messages = warning;
CREATE EXTENSION msgbilling;
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
