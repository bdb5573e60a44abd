"""Who may do what through the web face: API tokens and their roles (issue 12)."""
