"""Password complexity (FAB_PASSWORD_COMPLEXITY_VALIDATOR)."""

from __future__ import annotations

import re

from flask_appbuilder.exceptions import PasswordComplexityValidationError

MIN_LENGTH = 10


def validate_password(password: str) -> None:
    """At least 10 characters with a lower-case letter, an upper-case letter and a digit."""
    problems = []
    if len(password or "") < MIN_LENGTH:
        problems.append(f"at least {MIN_LENGTH} characters")
    if not re.search(r"[a-z]", password or ""):
        problems.append("a lower-case letter")
    if not re.search(r"[A-Z]", password or ""):
        problems.append("an upper-case letter")
    if not re.search(r"[0-9]", password or ""):
        problems.append("a digit")
    if problems:
        raise PasswordComplexityValidationError("Password needs " + ", ".join(problems))
