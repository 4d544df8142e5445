"""The read model: views of incidents, tasks and timelines, the queries that read them, the 三率
report and the forces near a place. The console reads these, never the dispatcher's storage
modules; the dispatcher reads them too, to publish what changed.
"""
