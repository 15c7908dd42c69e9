"""Service discovery: provider and consumer nodes in a registry (ZooKeeper), in the
layout Dubbo Java, dubbo-go and apache-dubbo share (PROTOCOL.md §8)."""
