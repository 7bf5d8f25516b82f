-- Reserved: version 5 belongs to another branch (this placeholder goes when it merges).
SELECT 1;
