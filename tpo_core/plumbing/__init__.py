"""Plumbing shared by everything: provenance and cache identities (:mod:`.provenance`), random streams
(:mod:`.streams`), sharding over the processes of a launch (:mod:`.sharding`), progress (:mod:`.progress`) and small
input checks (:mod:`.common`)."""
