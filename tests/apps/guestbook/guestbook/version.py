"""The version label shown beside the page heading (tests commit new versions by changing it)."""
LABEL = "v1"
