"""The alert rules (schemas/CONTRACT.md section 6), evaluated on final windows and on readings."""
