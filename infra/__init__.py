"""Local stack, migrations, demo-city seeds and settings shared by every service."""
