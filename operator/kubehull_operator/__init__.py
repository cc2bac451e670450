"""The kubehull operator: reconciles RuntimeProfiles into RuntimeClasses and per-node NodeRuntimes."""
