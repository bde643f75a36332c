"""Small shared utilities: config location, resolvers, atomic files, logging helpers."""
