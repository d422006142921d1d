"""Placeholder: filled in this session (issue #5)."""


def register(appbuilder) -> None:
    return None
