"""Where the stack's shape lives: topics, ClickHouse DDL, the local stack's parts."""
