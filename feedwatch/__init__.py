"""feedwatch: alert on new and updated feed entries that match keyword rules."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/feedwatch/feedwatch"
DEFAULT_USER_AGENT = f"feedwatch/{__version__} (+{PROJECT_URL})"
