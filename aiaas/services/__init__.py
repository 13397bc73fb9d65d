"""Use cases that span packages (store + data + registry + serving). Routes stay thin by calling these."""
