-- W7: attach concurrently, then build the indexes concurrently.
SET client_min_messages = warning;
CREATE EXTENSION msgbilling;
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at', concurrently => true);
SELECT msgbilling.attach_index_statements() \gexec
