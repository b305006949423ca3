"""The one error type users see: a SpecError says where, what was expected and how to fix it."""
from __future__ import annotations


class SpecError(Exception):
    """An invalid spec, order string or override.

    `where` is "file:line:col" (or "<order>:col", "<override>" ...), `snippet` an
    optional source line with a caret under the offending character.
    """

    def __init__(self, message: str, *, where: str | None = None, snippet: str | None = None,
                 hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.snippet = snippet
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.where}: {self.message}" if self.where else self.message
        parts = [head]
        if self.snippet:
            parts.append(self.snippet)
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)
