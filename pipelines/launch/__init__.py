"""Checks made before a job starts, and the packages a Dataflow worker installs."""
