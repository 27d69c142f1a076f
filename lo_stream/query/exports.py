"""The named queries modules export: ``<module>.<export>`` -> a document and the node it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from lo_stream.modules import Module
from lo_stream.query.functions import FunctionRegistry, functions as published_functions
from lo_stream.query.language import QueryError, parameters_of, validate
from lo_stream.reducers import Reducer

__all__ = ["Export", "ExportCatalog"]


@dataclass(frozen=True)
class Export:
    id: str
    document: dict
    returns: str
    parameters: tuple[str, ...]
    description: str = ""

    def describe(self) -> dict:
        return {"export": self.id, "parameters": list(self.parameters), "description": self.description}


class ExportCatalog:
    """Every export of the installed modules, each document checked once at start."""

    def __init__(self, modules: Iterable[Module], reducers: Iterable[Reducer],
                 functions: FunctionRegistry = published_functions) -> None:
        self.reducers = {reducer.id: reducer for reducer in reducers}
        self.functions = functions
        self._exports: dict[str, Export] = {}
        for module in modules:
            if module.queries is None:
                continue
            try:
                self.check(module.queries)
            except QueryError as exc:
                raise QueryError(f"module {module.name!r}: QUERIES: {exc}", exc.node) from None
            for name, export in module.queries.get("exports", {}).items():
                export_id = f"{module.name}.{name}"
                self._exports[export_id] = Export(
                    export_id, module.queries, export["returns"],
                    tuple(sorted(parameters_of(module.queries, export["returns"]))), export.get("description", ""),
                )

    def check(self, document: dict) -> None:
        validate(document, functions=self.functions.names(), reducers=set(self.reducers))

    def get(self, export_id: str) -> Export:
        try:
            return self._exports[export_id]
        except KeyError:
            known = ", ".join(sorted(self._exports)) or "none"
            raise QueryError(f"no export {export_id!r}; exports: {known}") from None

    def __iter__(self):
        return iter(sorted(self._exports.values(), key=lambda export: export.id))
