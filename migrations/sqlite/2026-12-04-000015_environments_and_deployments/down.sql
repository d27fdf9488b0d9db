DROP TABLE deployments;
DROP TABLE environments;
