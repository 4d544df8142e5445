"""The dispatcher's adapters: PostgreSQL (incidents, cases, timers, the outbox, rates) and Redis live
state, carrying out what the core decides.
"""
