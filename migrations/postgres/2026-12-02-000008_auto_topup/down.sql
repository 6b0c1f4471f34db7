DROP TABLE payment_methods;
DROP TABLE auto_topups;
