"""The demo's user directory: in-memory users and validation of new ones (no I/O)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

MAX_NAME_LENGTH = 100
MAX_EMAIL_LENGTH = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

SEED_USERS = (("Ada Lovelace", "ada@example.com"),
              ("Grace Hopper", "grace@example.com"),
              ("Alan Turing", "alan@example.com"))


class InvalidUser(ValueError):
    """A ``POST /api/users`` body that cannot become a user; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class User:
    """One user as the API shows it."""

    id: int
    name: str
    email: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def validate_new_user(data: object) -> tuple[str, str]:
    """The ``(name, email)`` of a new user from decoded JSON, or :class:`InvalidUser`."""
    if not isinstance(data, dict):
        raise InvalidUser("body", 'body must be a JSON object: {"name": ..., "email": ...}')
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidUser("name", "name is required and must be a non-empty string")
    if len(name.strip()) > MAX_NAME_LENGTH:
        raise InvalidUser("name", f"name must be at most {MAX_NAME_LENGTH} characters")
    email = data.get("email")
    if not isinstance(email, str) or not email.strip():
        raise InvalidUser("email", "email is required and must be a non-empty string")
    email = email.strip()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        raise InvalidUser("email", f"email {email[:MAX_EMAIL_LENGTH]!r} is not a valid address")
    return name.strip(), email


class Users:
    """Users in creation order, ids counting up from 1, seeded like the original demo."""

    def __init__(self, seed: tuple[tuple[str, str], ...] = SEED_USERS) -> None:
        self._users: list[User] = []
        for name, email in seed:
            self._users.append(User(id=len(self._users) + 1, name=name, email=email))
        self.created = 0
        """Users created through the API (the seed does not count)."""

    def create(self, name: str, email: str) -> User:
        """Add a user and return it."""
        user = User(id=len(self._users) + 1, name=name, email=email)
        self._users.append(user)
        self.created += 1
        return user

    def all(self) -> list[User]:
        """Every user, oldest first."""
        return list(self._users)
