"""Development tooling, kept apart from what production runs (the image leaves it out): the local
stack behind `./centre run` (`stack`: PostgreSQL, Redis, the Tansu broker, the services, under a
supervisor), the demo city (`city`, `seed`) and the simulator that brings it to life.

Top of the house: may import any package; nothing in production imports it.
"""
