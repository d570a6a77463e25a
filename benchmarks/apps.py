"""The example site's tenant app, minus its demo hooks."""

from __future__ import annotations

from example_site.customers.apps import CustomersConfig


class BenchCustomersConfig(CustomersConfig):
    """``customers`` (the ``Client`` tenant model) without the example site's signal receivers.

    The example site records every send through ``pre_send``/``post_send`` for its web page;
    that is the demo's cost, not tenantmail's, so the benchmark leaves it out. (The report's
    header says how many receivers are connected, should anything else connect one.)
    """

    def ready(self) -> None:
        pass
