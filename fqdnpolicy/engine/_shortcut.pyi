from collections.abc import Callable
from typing import Any

class Shortcut:
    snapshot: object
    general: Callable[..., Any]
    def __init__(
        self,
        snapshot: object,
        hosts: dict[str, Any],
        records: dict[str, Any],
        owners: dict[str, Any],
        general: Callable[..., Any],
        outside_limit: int,
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def publish(self, snapshot: object) -> None: ...
