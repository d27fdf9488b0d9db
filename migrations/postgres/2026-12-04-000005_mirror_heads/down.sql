DROP TABLE mirror_heads;
