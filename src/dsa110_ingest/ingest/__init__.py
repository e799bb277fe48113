"""Watch -> scan -> read -> index/group: everything between a file and its group event."""
