-- Buy clicks by the page they came from: the replay page's, next to the total. Every click
-- counted before was made on the live page.
ALTER TABLE tags ADD COLUMN replay_clicks INTEGER NOT NULL DEFAULT 0;
