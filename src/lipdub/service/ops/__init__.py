"""Operations: the health probe, Prometheus metrics, the disk watermark and the fleet
check that workers and the API run at start.

Layer: below ``context``; above ``store`` and ``storage``. What needs the whole context
takes any object with the attributes it reads (a Protocol), not ``Context`` itself.
"""
