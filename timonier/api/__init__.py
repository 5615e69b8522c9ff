"""The plumbing every JSON API of the CDP API service (:3030) shares: cdp's customers, segments
and workflows all build on it, so none of them borrows another's private helpers."""
