"""Block headers, confirmations and the reorg watcher."""
