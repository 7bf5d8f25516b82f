"""Edge tier: caches parts and segments in front of the origin."""
