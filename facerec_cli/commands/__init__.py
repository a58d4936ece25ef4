"""What each CLI command does, as plain functions the tests call directly."""
