"""Prompt templates in prompts/*.txt, rendered strictly: a missing or unexpected variable is an error."""

from __future__ import annotations

from pathlib import Path
from string import Template

from coach.errors import CoachError


class Prompts:
    """Loads prompts/NAME.txt and fills in its $variables."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise CoachError(f"Prompts folder {folder} does not exist; set COACH_PROMPTS_DIR.")
        self.folder = folder
        self._cache: dict[str, Template] = {}

    def names(self) -> list[str]:
        """Every prompt in the folder."""
        return sorted(p.stem for p in self.folder.glob("*.txt"))

    def template(self, name: str) -> Template:
        """The template called name."""
        if name not in self._cache:
            path = self.folder / f"{name}.txt"
            if not path.is_file():
                raise CoachError(f"Prompt {path} is missing.")
            template = Template(path.read_text(encoding="utf-8").rstrip("\n"))
            if not template.is_valid():
                raise CoachError(f"Prompt {path}: a `$` is not followed by a variable name; write `$$` for a "
                                 "literal dollar sign.")
            self._cache[name] = template
        return self._cache[name]

    def variables(self, name: str) -> set[str]:
        """The $variables a template uses."""
        return set(self.template(name).get_identifiers())

    def render(self, name: str, **values: object) -> str:
        """The prompt with every variable filled; raises CoachError on a missing or unknown variable."""
        template = self.template(name)
        expected = set(template.get_identifiers())
        missing, extra = expected - values.keys(), values.keys() - expected
        if missing or extra:
            raise CoachError(f"Prompt {name}: missing {sorted(missing)}, unexpected {sorted(extra)}")
        return template.substitute({k: str(v) for k, v in values.items()})
