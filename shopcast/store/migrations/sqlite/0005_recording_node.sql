-- The node whose recordings store holds a recording: with the file store, only that node can
-- serve it (the others redirect there); empty for recordings made before this version.
ALTER TABLE recordings ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
