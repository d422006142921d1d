"""Security: the security manager, the user↔employee link, data scopes, role policy and masking."""
