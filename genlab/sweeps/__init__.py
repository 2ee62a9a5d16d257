"""Persistent Optuna searches: a study in a database that a rerun continues and parallel workers share."""
