"""Job operations behind every API: submit, read, act (cancel, suspend, resume, delete), migrate."""
