"""The watcher's settings (docs/design.md §8): every one has a default, an environment variable and a flag."""

from __future__ import annotations

import dataclasses
import re

from shared import subjects
from shared.settings import (
    Settings,
    SettingsError,
    csv,
    duration,
    optional_path,
    optional_str,
    positive_int,
    setting,
)

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WatcherSettings(Settings):
    watch_namespaces: tuple[str, ...] = setting(
        "WVA_WATCH_NAMESPACES", (), csv, "namespaces to watch, comma-separated (empty: all namespaces)"
    )
    controller_instance: str | None = setting(
        "WVA_CONTROLLER_INSTANCE",
        None,
        optional_str,
        "manage only VAs labelled wva.llmd.ai/controller-instance=<this> (unset: only VAs without the label)",
    )
    kubeconfig: str | None = setting(
        "KUBECONFIG", None, optional_path, "kubeconfig file (unset: the in-cluster service account)"
    )
    watch_timeout: float = setting(
        "WVA_WATCH_TIMEOUT", 300.0, duration, "server-side timeout of one watch request (spread by up to half again)"
    )
    watch_backoff_min: float = setting(
        "WVA_WATCH_BACKOFF_MIN", 0.2, duration, "first backoff after a failed list/watch (doubles, with jitter)"
    )
    watch_backoff_max: float = setting("WVA_WATCH_BACKOFF_MAX", 30.0, duration, "longest backoff between attempts")
    watch_give_up: float = setting(
        "WVA_WATCH_GIVE_UP",
        900.0,
        duration,
        "stop the service when the API has failed for this long without a break (0: never)",
    )
    list_page_size: int = setting("WVA_LIST_PAGE_SIZE", 500, positive_int, "objects per page when listing")
    debounce: float = setting(
        "WVA_WATCHER_DEBOUNCE", 0.05, duration, "how long to fold a burst of watch events into one pass"
    )
    publish_timeout: float = setting(
        "WVA_PUBLISH_TIMEOUT", 2.0, duration, "how long to wait for JetStream's ack before keeping a message for later"
    )
    publish_backoff_max: float = setting(
        "WVA_PUBLISH_BACKOFF_MAX", 5.0, duration, "longest wait between attempts to publish while NATS is away"
    )

    def validate(self) -> None:
        super().validate()
        for namespace in self.watch_namespaces:
            try:
                subjects.validate_namespace(namespace)
            except subjects.InvalidName as exc:
                raise SettingsError(f"WVA_WATCH_NAMESPACES: {exc}") from None
        if len(set(self.watch_namespaces)) != len(self.watch_namespaces):
            raise SettingsError(f"WVA_WATCH_NAMESPACES lists a namespace twice: {','.join(self.watch_namespaces)}")
        if self.controller_instance is not None and (
            len(self.controller_instance) > 63 or not _LABEL_VALUE.match(self.controller_instance)
        ):
            raise SettingsError(
                f"WVA_CONTROLLER_INSTANCE={self.controller_instance!r} is not a valid label value "
                "(at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
            )
        if self.watch_timeout < 1:
            raise SettingsError(f"WVA_WATCH_TIMEOUT={self.watch_timeout:g}s: must be at least 1s")
        if not 0 < self.watch_backoff_min <= self.watch_backoff_max:
            raise SettingsError(
                f"WVA_WATCH_BACKOFF_MIN ({self.watch_backoff_min:g}s) must be positive and at most "
                f"WVA_WATCH_BACKOFF_MAX ({self.watch_backoff_max:g}s)"
            )
        if self.publish_backoff_max <= 0:
            raise SettingsError("WVA_PUBLISH_BACKOFF_MAX must be positive")
        if self.publish_timeout <= 0:
            raise SettingsError("WVA_PUBLISH_TIMEOUT must be positive")
