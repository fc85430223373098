// SPDX-License-Identifier: MIT
pragma solidity 0.8.17;

/**
 * @dev A minimal ERC-20 for tests whose `transfer`, `transferFrom` and `approve` return no
 * value (as some deployed tokens do). OpenZeppelin's `safeTransferFrom` accepts that, so the
 * NitroAdjudicator takes deposits in it; but the adjudicator pays out through an interface
 * returning `bool`, whose call reverts on empty return data: a payout in this token never
 * succeeds, and the funds stay in the adjudicator.
 */
contract NoReturnToken {
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    uint256 public totalSupply;
    uint8 public constant decimals = 18;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    /**
     * @param owner Receives the whole supply, 10^30 units.
     */
    constructor(address owner) {
        totalSupply = 10**30;
        balanceOf[owner] = totalSupply;
        emit Transfer(address(0), owner, totalSupply);
    }

    function transfer(address to, uint256 amount) external {
        _move(msg.sender, to, amount);
    }

    function transferFrom(address from, address to, uint256 amount) external {
        require(allowance[from][msg.sender] >= amount, 'allowance');
        allowance[from][msg.sender] -= amount;
        _move(from, to, amount);
    }

    function approve(address spender, uint256 amount) external {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
    }

    function _move(address from, address to, uint256 amount) private {
        require(balanceOf[from] >= amount, 'balance');
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
    }
}
