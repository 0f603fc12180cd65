-- Everything pending, committing every 1000 messages.
CALL msgbilling.drain(1000);
