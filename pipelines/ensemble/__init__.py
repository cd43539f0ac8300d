"""Ensembles: several training exports scored as one, and their launch checks."""
