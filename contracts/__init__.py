"""The contracts layer, at the bottom of the house: what the stages say to each other.

Topic names and Redis key prefixes (`topics`), every record on every topic as a typed schema
(`reports`, `incidents`, `positions`, `registry`, `events`, `commands`, `deadletters`), how a
record is judged unusable (`validation`), and the vocabulary every stage shares (`categories`,
`geo`, `kinds`, `states`, `timewindow`, `masking`). Every package may import it; it imports none
of them, and no I/O library (the import contracts in pyproject.toml hold it to that).
"""
