"""Several roles in one coach: a role's name, its id (`coach:<slug>` in the API), and resolving what a person
or a client names (the full name in any case, its slug, or its id) to a role of the index."""

from __future__ import annotations

import re

from coach.errors import CoachError

MODEL_ID = "coach"  # the API's model id of the default role


def slug(role: str) -> str:
    """The role's name as an id: lower case, words joined by '-' ("Staff Data Engineer" -> staff-data-engineer)."""
    return re.sub(r"[^a-z0-9]+", "-", role.lower()).strip("-") or "role"


def model_id(role: str) -> str:
    """The API model id that answers from this role."""
    return f"{MODEL_ID}:{slug(role)}"


def resolve(name: str, roles: tuple[str, ...]) -> str:
    """The role of `roles` that `name` names; raises CoachError listing the roles when none does.

    `coach` (the API's default model id) names the first role, the default.
    """
    wanted = name.strip()
    if not roles:
        raise CoachError("The knowledge base holds no role yet.")
    if wanted.lower() == MODEL_ID:
        return roles[0]
    key = slug(wanted.removeprefix(f"{MODEL_ID}:"))
    for role in roles:
        if role.lower() == wanted.lower() or slug(role) == key:
            return role
    known = ", ".join(f"{r} ({slug(r)})" for r in roles)
    raise CoachError(f"No role \"{wanted[:80]}\" in the knowledge base; its roles: {known}.")


def ordered(roles: tuple[str, ...], default: str | None) -> tuple[str, ...]:
    """The roles with the default one first (COACH_ROLE when set, else the role of the first file)."""
    if not default or not roles:
        return roles
    first = resolve(default, roles)
    return (first, *(r for r in roles if r != first))
