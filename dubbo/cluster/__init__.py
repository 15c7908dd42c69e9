"""Calls over many providers: choosing one (loadbalance), retrying on another, and the
provider list a registry or a static URL keeps."""
