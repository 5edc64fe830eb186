"""One Prefect task per pipeline stage: read inputs, call the engine, write outputs atomically."""
